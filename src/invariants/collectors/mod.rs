//! Collectors, `[collectors.NAME]`: each reads one system and returns tables for the
//! invariant harness's snapshot. Each kind is one module, listed in [`KINDS`].

pub mod command;
pub mod http;
pub mod processes;
pub mod redis;
pub mod sql;

use crate::config::load::{self, Diagnostic, ParseKind};
use crate::config::Dur;
use crate::sources::BoxFuture;
use rusqlite::types::Value;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::any::Any;
use std::fmt;
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
    /// What was left out and why (a Redis key of another type), one line each; the rest of
    /// the table was read.
    pub skipped: Vec<String>,
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

/// Every kind of collector, by its `type`: a reader sees them all here. Adding a kind is one
/// file (a config struct that implements [`Collector`]) and one line here.
pub const KINDS: &[(&str, ParseKind<CollectorConfig>)] = &[
    ("sql", parse::<sql::SqlConfig>),
    ("redis", parse::<redis::RedisConfig>),
    ("processes", parse::<processes::ProcessesConfig>),
    ("http", parse::<http::HttpConfig>),
    ("command", parse::<command::CommandConfig>),
];

/// What each kind of collector is, implemented by its config struct (the `[collectors.NAME]`
/// table minus `type` and the [`Shared`] keys, deserialized with serde).
pub trait Collector: fmt::Debug + Send + Sync + Any {
    /// Rules serde cannot express; the message is reported at the collector's table.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    /// The tables it makes. `table` names its one table, for kinds that make one: the shared
    /// `table` key, or else the collector's name.
    fn declared(&self, table: &str) -> Vec<Declared>;
    /// Reads its system.
    fn collect<'a>(
        &'a self,
        table: &'a str,
        cycle: &'a Cycle,
    ) -> BoxFuture<'a, Result<Vec<Table>, CollectError>>;
    /// Why it is left unset on purpose (an empty `${VAR:-}`), if it is: the invariants that
    /// need it are skipped, and it is not reported unavailable.
    fn unconfigured(&self) -> Option<String> {
        None
    }
    /// Whether the shared `table` key applies. Kinds that name their tables themselves (`sql`,
    /// with `tables`) say no, and `table` is then an unknown key to them.
    fn one_table() -> bool
    where
        Self: Sized,
    {
        true
    }
}

/// The keys every collector may have, whatever its `type`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shared {
    /// Name of its one table (default: the collector's name).
    pub table: Option<String>,
    /// Its own timeout; `[invariants] timeout` otherwise.
    pub timeout: Option<Dur>,
    /// Zero rows means the collector is blind, not that all is well: it is then unavailable.
    #[serde(default)]
    pub non_empty: bool,
}

const SHARED: [&str; 3] = ["table", "timeout", "non_empty"];

/// The one parse-then-check path of every `[collectors.NAME]` table: the shared keys first,
/// then the kind's own, then the kind's check.
fn parse<T: Collector + DeserializeOwned>(
    kind: &'static str,
    src: &load::Source,
    mut table: Spanned<DeValue<'_>>,
) -> Result<CollectorConfig, Diagnostic> {
    let start = table.span().start;
    let keys = if T::one_table() {
        &SHARED[..]
    } else {
        &SHARED[1..]
    };
    let shared: Shared = load::deserialize(src, load::split_off(&mut table, keys))?;
    let collector: T = load::deserialize_rest(src, table, keys)?;
    collector.check().map_err(|m| src.at(start, m))?;
    Ok(CollectorConfig {
        kind,
        shared,
        collector: Arc::new(collector),
    })
}

/// One configured collector: its `type`, the keys every collector has, and its kind's config.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    kind: &'static str,
    /// `table`, `timeout`, `non_empty`.
    pub shared: Shared,
    collector: Arc<dyn Collector>,
}

impl CollectorConfig {
    /// Its `type`, as listed in [`KINDS`].
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The kind's own config, when it is a `T` (`None` otherwise).
    pub fn get<T: Collector>(&self) -> Option<&T> {
        let any: &dyn Any = self.collector.as_ref();
        any.downcast_ref()
    }

    fn table(&self, name: &str) -> String {
        self.shared
            .table
            .clone()
            .unwrap_or_else(|| name.to_string())
    }

    /// The tables the collector called `name` makes.
    pub fn declared(&self, name: &str) -> Vec<Declared> {
        self.collector.declared(&self.table(name))
    }

    /// Reads its system, for the collector called `name`.
    pub fn collect<'a>(
        &'a self,
        name: &'a str,
        cycle: &'a Cycle,
    ) -> BoxFuture<'a, Result<Vec<Table>, CollectError>> {
        Box::pin(async move {
            let table = self.table(name);
            self.collector.collect(&table, cycle).await
        })
    }

    /// Its own timeout, if set.
    pub fn timeout(&self) -> Option<Duration> {
        self.shared.timeout.map(|d| d.0)
    }

    /// Zero rows means the collector is blind, not that all is well.
    pub fn non_empty(&self) -> bool {
        self.shared.non_empty
    }

    /// Why it is left unset on purpose, if it is.
    pub fn unconfigured(&self) -> Option<String> {
        self.collector.unconfigured()
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
        skipped: Vec::new(),
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
