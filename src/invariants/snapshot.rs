//! The snapshot: one in-memory SQLite database per cycle, with `now()` from the injected clock
//! and the previous cycle's snapshot attached as schema `prev`.
//!
//! Each snapshot is a named shared-cache memory database, so the next cycle can ATTACH it
//! without copying: the harness keeps the previous connection open until then.

use super::collectors::{CollectorConfig, Table};
use rusqlite::functions::FunctionFlags;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, OpenFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A cycle's snapshot database.
pub struct Snapshot {
    pub conn: Connection,
    pub uri: String,
    /// The tables it holds, with their columns.
    pub tables: BTreeMap<String, Vec<String>>,
}

fn quote(id: &str) -> String {
    format!("\"{}\"", id.replace('"', "\"\""))
}

fn register_now(conn: &Connection, now_ms: i64) -> rusqlite::Result<()> {
    conn.create_scalar_function("now", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        Ok(now_ms as f64 / 1000.0)
    })
}

fn create(conn: &Connection, schema: &str, name: &str, cols: &[String]) -> rusqlite::Result<()> {
    // A JSON source that returned `[]` has no columns; SQLite needs one.
    let mut cols: Vec<String> = cols.iter().map(|c| quote(c)).collect();
    if cols.is_empty() {
        cols.push("\"_empty\"".into());
    }
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.{} ({})",
        quote(name),
        cols.join(", ")
    ))
}

impl Snapshot {
    /// Loads `tables` into a new snapshot; `prev` (the last cycle's) is attached as `prev`,
    /// and every table missing there is created empty so queries over change still prepare.
    pub fn build(
        tables: &[Table],
        declared: &BTreeMap<String, Vec<String>>,
        now_ms: i64,
        prev: Option<&Snapshot>,
    ) -> rusqlite::Result<Snapshot> {
        let uri = format!(
            "file:vigil-snapshot-{}-{}?mode=memory&cache=shared",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let conn = Connection::open_with_flags(
            &uri,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        register_now(&conn, now_ms)?;
        // A throwaway database: no rollback journal needed.
        conn.execute_batch("PRAGMA journal_mode = OFF")?;
        let mut have = BTreeMap::new();
        let tx = conn.unchecked_transaction()?;
        for t in tables {
            create(&tx, "main", &t.name, &t.columns)?;
            if t.columns.is_empty() {
                have.insert(t.name.clone(), t.columns.clone());
                continue;
            }
            let marks = vec!["?"; t.columns.len()].join(", ");
            let mut ins = tx.prepare(&format!(
                "INSERT INTO main.{} VALUES ({marks})",
                quote(&t.name)
            ))?;
            for row in &t.rows {
                ins.execute(rusqlite::params_from_iter(row.iter()))?;
            }
            have.insert(t.name.clone(), t.columns.clone());
        }
        tx.commit()?;
        match prev {
            Some(p) => conn.execute("ATTACH DATABASE ?1 AS prev", [&p.uri])?,
            None => conn.execute("ATTACH DATABASE ':memory:' AS prev", [])?,
        };
        let prev_has: BTreeSet<String> = prev
            .map(|p| p.tables.keys().cloned().collect())
            .unwrap_or_default();
        for (name, cols) in have.iter().chain(declared.iter()) {
            if !prev_has.contains(name) {
                create(&conn, "prev", name, cols)?;
            }
        }
        Ok(Snapshot {
            conn,
            uri,
            tables: have,
        })
    }

    /// Writes the snapshot (schema `main`) to a SQLite file.
    pub fn write_to(&self, path: &std::path::Path) -> rusqlite::Result<()> {
        let _ = std::fs::remove_file(path);
        self.conn
            .execute("VACUUM main INTO ?1", [path.display().to_string()])?;
        Ok(())
    }
}

/// The empty schema `vigil check` prepares invariant queries against.
pub struct Schema {
    /// table → (collector, columns when known).
    tables: BTreeMap<String, (String, Option<Vec<String>>)>,
}

impl Schema {
    pub fn declared(collectors: &BTreeMap<String, CollectorConfig>) -> Schema {
        let mut tables = BTreeMap::new();
        for (name, c) in collectors {
            for d in c.collector().declared(name) {
                tables.insert(d.name, (name.clone(), d.columns));
            }
        }
        Schema { tables }
    }

    pub fn owner(&self, table: &str) -> Option<&str> {
        self.tables.get(table).map(|(o, _)| o.as_str())
    }

    /// Prepares `query`; returns the snapshot tables it reads. Tables whose columns are only
    /// known at run time (sql `SELECT *`, http, command) get no columns here, so for queries
    /// over them only syntax and table names are checked; columns are checked when it runs.
    pub fn check(&self, query: &str) -> Result<BTreeSet<String>, String> {
        let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
        register_now(&conn, 0).map_err(|e| e.to_string())?;
        conn.execute("ATTACH DATABASE ':memory:' AS prev", [])
            .map_err(|e| e.to_string())?;
        for (name, (_, cols)) in &self.tables {
            let cols = cols
                .clone()
                .unwrap_or_else(|| vec!["_columns_known_at_run_time".into()]);
            for schema in ["main", "prev"] {
                create(&conn, schema, name, &cols).map_err(|e| e.to_string())?;
            }
        }
        let read: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let r = read.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            if let AuthAction::Read { table_name, .. } = ctx.action {
                if ctx.database_name == Some("main") {
                    r.lock().unwrap().insert(table_name.to_string());
                }
            }
            Authorization::Allow
        }));
        let mut tables = from_clause_tables(query, &self.tables);
        match conn.prepare(query) {
            Ok(stmt) => {
                if !stmt.readonly() {
                    return Err("an invariant is a SELECT; it must not change the snapshot".into());
                }
                if stmt.column_count() == 0 {
                    return Err("the query returns no columns; select the observed state".into());
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let unknown_cols = tables
                    .iter()
                    .any(|t| matches!(self.tables.get(t), Some((_, None))));
                if msg.contains("no such table") {
                    let known: Vec<&str> = self.tables.keys().map(String::as_str).collect();
                    return Err(format!("{msg}; the snapshot's tables are: {} (declare it in a [snapshot.NAME] collector)", known.join(", ")));
                }
                if !(msg.contains("no such column") && unknown_cols) {
                    return Err(msg);
                }
            }
        }
        tables.extend(read.lock().unwrap().iter().cloned());
        Ok(tables)
    }
}

/// Declared table names that follow FROM or JOIN (not `prev.`), a fallback for reads the
/// authorizer does not report (`count(*)`) or cannot see (queries over unknown columns).
fn from_clause_tables(
    query: &str,
    known: &BTreeMap<String, (String, Option<Vec<String>>)>,
) -> BTreeSet<String> {
    let words: Vec<&str> = query
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = BTreeSet::new();
    for w in words.windows(2) {
        let kw = w[0].to_ascii_lowercase();
        if kw == "from" || kw == "join" {
            let name = w[1].trim_matches('"');
            let name = name.strip_prefix("main.").unwrap_or(name);
            if known.contains_key(name) {
                out.insert(name.to_string());
            }
        }
    }
    out
}
