//! Collectors: each reads one system and returns tables for the snapshot.

pub mod command;
pub mod http;
pub mod processes;
pub mod redis;
pub mod sql;

use crate::config::load::{self, Diagnostic, Tagged};
use crate::sources::BoxFuture;
use rusqlite::types::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use toml::de::DeValue;
use toml::Spanned;

/// One table of the snapshot, as read.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Rows,
}

#[derive(Debug, Clone)]
pub enum Rows {
    /// Read into memory; the snapshot inserts them.
    Values(Vec<Vec<Value>>),
    /// Written into the snapshot by the collector itself (SQLite sources): this many.
    Written(usize),
}

impl Table {
    pub fn len(&self) -> usize {
        match &self.rows {
            Rows::Values(v) => v.len(),
            Rows::Written(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a collector knows of the cycle it runs in.
#[derive(Debug, Clone)]
pub struct Cycle {
    /// The cycle's time, from the injected clock.
    pub now_ms: i64,
    /// URI of the cycle's snapshot database, for collectors that write into it directly.
    pub snapshot_uri: String,
    /// Its size limit, for the error that says it was reached.
    pub snapshot_max_mb: u64,
    /// Held while writing into the snapshot: it has one writer at a time, and waiting here
    /// wakes the next writer at once where SQLite's busy handler would sleep.
    pub writer: Arc<Mutex<()>>,
}

/// A table a collector will make, with its columns when known before it runs.
#[derive(Debug, Clone)]
pub struct Declared {
    pub name: String,
    pub columns: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CollectError(pub String);

/// What every collector does.
pub trait Collector: Send + Sync {
    /// The tables it makes.
    fn declared(&self, name: &str) -> Vec<Declared>;
    /// Reads its system.
    fn collect<'a>(
        &'a self,
        name: &'a str,
        cycle: &'a Cycle,
    ) -> BoxFuture<'a, Result<Vec<Table>, CollectError>>;
    /// Its own timeout, if set.
    fn timeout(&self) -> Option<Duration>;
    /// Zero rows means the source is blind, not that all is well.
    fn non_empty(&self) -> bool;
    /// Why it is left unset on purpose (an empty `${VAR:-}`), if it is: the invariants that
    /// need it are skipped, and it is not reported unavailable.
    fn unconfigured(&self) -> Option<String> {
        None
    }
}

/// One configured collector, by its `type`.
#[derive(Debug, Clone)]
pub enum CollectorConfig {
    Sql(sql::SqlConfig),
    Redis(redis::RedisConfig),
    Processes(processes::ProcessesConfig),
    Http(http::HttpConfig),
    Command(command::CommandConfig),
}

impl Tagged for CollectorConfig {
    const SECTION: &'static str = "snapshot";
    const KINDS: &'static [&'static str] = &["sql", "redis", "processes", "http", "command"];

    fn deserialize_kind(
        kind: &str,
        src: &load::Source,
        table: Spanned<DeValue<'_>>,
    ) -> Result<Self, Diagnostic> {
        let start = table.span().start;
        Ok(match kind {
            "sql" => CollectorConfig::Sql(load::deserialize(src, table)?),
            "redis" => {
                let r: redis::RedisConfig = load::deserialize(src, table)?;
                r.check().map_err(|m| src.at(start, m))?;
                CollectorConfig::Redis(r)
            }
            "processes" => CollectorConfig::Processes(load::deserialize(src, table)?),
            "http" => CollectorConfig::Http(load::deserialize(src, table)?),
            "command" => {
                let c: command::CommandConfig = load::deserialize(src, table)?;
                if c.command.is_empty() {
                    return Err(src.at(start, "`command` is empty; give the program and its arguments, like [\"curl\", \"-s\", \"http://...\"]"));
                }
                CollectorConfig::Command(c)
            }
            _ => unreachable!("take_tagged checks KINDS"),
        })
    }
}

impl CollectorConfig {
    pub fn collector(&self) -> &dyn Collector {
        match self {
            CollectorConfig::Sql(c) => c,
            CollectorConfig::Redis(c) => c,
            CollectorConfig::Processes(c) => c,
            CollectorConfig::Http(c) => c,
            CollectorConfig::Command(c) => c,
        }
    }
}

/// A JSON document as a table: an array of objects is one row per object (columns are the
/// union of keys, in first-seen order); an object is one row; nested values become JSON text.
pub fn json_table(name: &str, doc: &serde_json::Value) -> Result<Table, CollectError> {
    let items: Vec<&serde_json::Map<String, serde_json::Value>> = match doc {
        serde_json::Value::Array(a) => a
            .iter()
            .map(|v| {
                v.as_object().ok_or_else(|| {
                    CollectError(format!("expected an array of JSON objects, found {v}"))
                })
            })
            .collect::<Result<_, _>>()?,
        serde_json::Value::Object(o) => vec![o],
        other => {
            return Err(CollectError(format!(
                "expected a JSON object or array of objects, found {other}"
            )))
        }
    };
    let mut columns: Vec<String> = Vec::new();
    for o in &items {
        for k in o.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let rows = items
        .iter()
        .map(|o| {
            columns
                .iter()
                .map(|c| o.get(c).map_or(Value::Null, json_value))
                .collect()
        })
        .collect();
    Ok(Table {
        name: name.to_string(),
        columns,
        rows: Rows::Values(rows),
    })
}

pub fn json_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::Integer)
            .unwrap_or_else(|| Value::Real(n.as_f64().unwrap_or(0.0))),
        serde_json::Value::String(s) => Value::Text(s.clone()),
        other => Value::Text(other.to_string()),
    }
}
