//! `type = "sql"`: named queries against a SQL database, each result a table.
//! `url` is a SQLite path (`sqlite:///abs/path`, `sqlite://rel/path` or a bare path) or a
//! PostgreSQL URL (`postgres://user@host:port/db`).
//!
//! A SQLite source is opened read-only with the snapshot attached, and each query's result
//! is written into the snapshot by SQLite itself (`CREATE TABLE … AS`), all queries in one
//! read transaction. PostgreSQL results are read with the simple query protocol (every value
//! as text) and typed back: integers and floats become numbers, NULL stays NULL, the rest is
//! text, so any column type works without a mapping.

use super::{CollectError, Collector, Cycle, Declared, Rows, Table};
use crate::invariants::snapshot::{explain, file_uri, quote};
use crate::sources::BoxFuture;
use rusqlite::types::Value;
use rusqlite::InterruptHandle;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    pub url: String,
    /// Snapshot table name → query that fills it.
    pub tables: BTreeMap<String, String>,
}

impl SqlConfig {
    fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }

    fn sqlite_path(&self) -> String {
        let u = self.url.as_str();
        u.strip_prefix("sqlite://").unwrap_or(u).to_string()
    }
}

impl Collector for SqlConfig {
    fn declared(&self, _table: &str) -> Vec<Declared> {
        self.tables
            .iter()
            .map(|(t, q)| Declared {
                name: t.clone(),
                columns: select_columns(q),
            })
            .collect()
    }

    fn collect<'a>(
        &'a self,
        _table: &'a str,
        cycle: &'a Cycle,
    ) -> BoxFuture<'a, Result<Vec<Table>, CollectError>> {
        Box::pin(async move {
            if self.is_postgres() {
                return read_postgres(&self.url, &self.tables).await;
            }
            let path = self.sqlite_path();
            let tables = self.tables.clone();
            let cycle = cycle.clone();
            // A cycle that gives up on this collector (timeout) interrupts its copy, so it
            // never holds the snapshot's write lock past its time.
            let cancel: Arc<Mutex<Cancel>> = Arc::default();
            let _guard = CancelOnDrop(cancel.clone());
            tokio::task::spawn_blocking(move || copy_sqlite(&path, &tables, &cycle, &cancel))
                .await
                .map_err(|e| CollectError(format!("sql collector panicked: {e}")))?
        })
    }

    /// Its tables are the keys of `tables`.
    fn one_table() -> bool {
        false
    }
}

/// Whether the cycle gave up on a copy, and how to interrupt it once it runs.
#[derive(Default)]
struct Cancel {
    cancelled: bool,
    handle: Option<InterruptHandle>,
}

struct CancelOnDrop(Arc<Mutex<Cancel>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let mut c = self.0.lock().unwrap();
        c.cancelled = true;
        if let Some(h) = c.handle.take() {
            h.interrupt();
        }
    }
}

/// Runs each query in the source and writes its result straight into the snapshot (attached),
/// all in one transaction: one consistent read of the source, and no row crosses into Rust.
/// The source is `main`, so the queries' table names resolve there first.
fn copy_sqlite(
    path: &str,
    tables: &BTreeMap<String, String>,
    cycle: &Cycle,
    cancel: &Mutex<Cancel>,
) -> Result<Vec<Table>, CollectError> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        file_uri(path, "mode=ro"),
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| CollectError(format!("cannot open SQLite database {path}: {e}")))?;
    {
        let mut c = cancel.lock().unwrap();
        if c.cancelled {
            return Err(CollectError("cancelled".into()));
        }
        c.handle = Some(conn.get_interrupt_handle());
    }
    let fail = |what: &str, e: rusqlite::Error| {
        let e = explain(&e, cycle.snapshot_max_mb);
        CollectError(format!("{what}: {e} (in {path})"))
    };
    conn.busy_timeout(Duration::from_secs(2))
        .map_err(|e| fail("busy timeout", e))?;
    let t = std::time::Instant::now();
    // memdb lets no reader in beside a writer, so even attaching waits for the lock.
    let _writer = cycle.writer.lock().unwrap_or_else(|e| e.into_inner());
    let waited = t.elapsed();
    // Given up while waiting: the cycle has moved on and must not see a late write.
    if cancel.lock().unwrap().cancelled {
        return Err(CollectError("cancelled".into()));
    }
    conn.execute(
        "ATTACH DATABASE ?1 AS vigil_snapshot",
        [&cycle.snapshot_uri],
    )
    .map_err(|e| fail("attach snapshot", e))?;
    let tx = conn.unchecked_transaction().map_err(|e| fail("begin", e))?;
    let mut out = Vec::new();
    for (name, query) in tables {
        let table = format!("vigil_snapshot.{}", quote(name));
        let query = query.trim().trim_end_matches(';');
        let at = |e| fail(&format!("table {name}"), e);
        tx.execute(&format!("CREATE TABLE {table} AS {query}"), [])
            .map_err(at)?;
        let stmt = tx.prepare(&format!("SELECT * FROM {table}")).map_err(at)?;
        let columns = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let n: i64 = tx
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .map_err(at)?;
        out.push(Table {
            name: name.clone(),
            columns,
            rows: Rows::Written(n as usize),
            skipped: Vec::new(),
        });
    }
    tx.commit().map_err(|e| fail("commit", e))?;
    tracing::debug!(
        path,
        wait_ms = waited.as_secs_f64() * 1000.0,
        copy_ms = (t.elapsed() - waited).as_secs_f64() * 1000.0,
        "sql copied into the snapshot"
    );
    Ok(out)
}

async fn read_postgres(
    url: &str,
    tables: &BTreeMap<String, String>,
) -> Result<Vec<Table>, CollectError> {
    use tokio_postgres::SimpleQueryMessage;
    // Errors name the server but never echo a password from the URL.
    let place = url.rsplit('@').next().unwrap_or(url);
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| CollectError(format!("{} ({place})", crate::error::chain(&e))))?;
    let driver = tokio::spawn(conn);
    let mut out = Vec::new();
    for (name, query) in tables {
        let msgs = client.simple_query(query).await.map_err(|e| {
            CollectError(format!(
                "table {name}: {} ({place})",
                crate::error::chain(&e)
            ))
        })?;
        let mut columns = Vec::new();
        let mut rows = Vec::new();
        for m in msgs {
            match m {
                SimpleQueryMessage::RowDescription(cols) => {
                    columns = cols.iter().map(|c| c.name().to_string()).collect();
                }
                SimpleQueryMessage::Row(r) => {
                    if columns.is_empty() {
                        columns = r.columns().iter().map(|c| c.name().to_string()).collect();
                    }
                    rows.push((0..r.len()).map(|i| typed(r.get(i))).collect());
                }
                _ => {}
            }
        }
        out.push(Table {
            name: name.clone(),
            columns,
            rows: Rows::Values(rows),
            skipped: Vec::new(),
        });
    }
    drop(client);
    let _ = driver.await;
    Ok(out)
}

/// A PostgreSQL text value as the SQLite value it most likely is.
fn typed(v: Option<&str>) -> Value {
    match v {
        None => Value::Null,
        Some(s) => {
            if let Ok(i) = s.parse::<i64>() {
                Value::Integer(i)
            } else if let Ok(f) = s.parse::<f64>() {
                if s.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
                {
                    Value::Real(f)
                } else {
                    Value::Text(s.to_string())
                }
            } else {
                Value::Text(s.to_string())
            }
        }
    }
}

/// The result columns of a simple `SELECT a, b AS c, t.d FROM ...`, to build the validation
/// schema before the database is reachable; `None` when they cannot be told (`*`, no FROM).
pub fn select_columns(query: &str) -> Option<Vec<String>> {
    let q = query.trim();
    let lower = q.to_ascii_lowercase();
    let body = lower.strip_prefix("select")?;
    let offset = q.len() - body.len();
    // The top-level FROM: depth 0, outside quotes.
    let bytes = body.as_bytes();
    let (mut depth, mut quote, mut end) = (0i32, None::<u8>, None);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(qc) if c == qc => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' | b'`' => quote = Some(c),
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ if depth == 0
                    && body[i..].starts_with("from")
                    && (i == 0 || !is_ident(bytes[i - 1]))
                    && !bytes.get(i + 4).copied().is_some_and(is_ident) =>
                {
                    end = Some(i);
                    break;
                }
                _ => {}
            },
        }
        i += 1;
    }
    let list = &q[offset..offset + end?];
    let mut cols = Vec::new();
    for item in split_top(list) {
        let item = item.trim();
        let name = match item.rsplit_once(char::is_whitespace) {
            Some((_, alias)) => alias,
            None => item.rsplit('.').next().unwrap_or(item),
        };
        let name = name.trim_matches(|c| c == '"' || c == '`');
        if name == "*" || name.is_empty() || !name.bytes().all(is_ident) {
            return None;
        }
        cols.push(name.to_string());
    }
    (!cols.is_empty()).then_some(cols)
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_result_columns_of_simple_selects() {
        assert_eq!(
            select_columns("SELECT name, max(x) AS m, t.id FROM t WHERE a IN (SELECT b FROM c)"),
            Some(vec!["name".into(), "m".into(), "id".into()])
        );
        assert_eq!(select_columns("SELECT * FROM t"), None);
    }
}
