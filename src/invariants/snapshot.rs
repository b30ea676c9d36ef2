//! The snapshot: one in-memory SQLite database per cycle, with `now()` from the injected clock
//! and the previous cycle's snapshot attached as schema `prev`.
//!
//! Each snapshot is a named database of SQLite's `memdb` VFS, which every connection of this
//! process can open by name. So collectors over SQLite copy into it from their own connection
//! (no row crosses into Rust), invariants are checked from several connections in parallel,
//! and the next cycle attaches it as `prev` without a copy.

use super::collectors::{CollectorConfig, Cycle, Rows, Table};
use rusqlite::functions::FunctionFlags;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A cycle's snapshot database.
pub struct Snapshot {
    /// The connection that loads it; it keeps the database alive.
    pub conn: Connection,
    pub uri: String,
    now_ms: i64,
    /// What `prev` is in this snapshot's connections.
    prev_uri: Option<String>,
}

pub(crate) fn quote(id: &str) -> String {
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

fn open(uri: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Readers wait out a writer rather than fail.
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

fn tables_in(conn: &Connection, schema: &str) -> rusqlite::Result<BTreeSet<String>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT name FROM {schema}.sqlite_schema WHERE type = 'table'"
    ))?;
    let names = stmt.query_map([], |r| r.get(0))?;
    names.collect()
}

/// A name no other memdb database of this process has.
fn fresh_uri() -> String {
    format!(
        "file:/vigil-snapshot-{}-{}?vfs=memdb",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether `e` is the snapshot's size limit being reached.
pub fn is_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// A SQLite error, with what to do when it is the snapshot's size limit that was reached.
pub fn explain(e: &rusqlite::Error, max_mb: u64) -> String {
    if is_full(e) {
        format!("the snapshot is full: it may hold {max_mb} MiB; select fewer rows, or raise [invariants] snapshot_max_mb")
    } else {
        e.to_string()
    }
}

impl Snapshot {
    /// A new, empty snapshot for a cycle at `now_ms`, holding at most `max_mb` MiB;
    /// collectors may write into it by `uri`.
    pub fn create(now_ms: i64, max_mb: u64) -> rusqlite::Result<Snapshot> {
        let uri = fresh_uri();
        let conn = open(&uri)?;
        let mut limit = i64::try_from(max_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
        // SAFETY: a live connection's handle, the schema name as a C string, and the i64 that
        // SQLITE_FCNTL_SIZE_LIMIT reads and writes back; memdb applies it to the database
        // itself, so every connection that writes to it is held to it.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                rusqlite::ffi::SQLITE_FCNTL_SIZE_LIMIT,
                (&mut limit as *mut i64).cast(),
            )
        };
        if rc != rusqlite::ffi::SQLITE_OK {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rc),
                Some("cannot set the snapshot's size limit".into()),
            ));
        }
        register_now(&conn, now_ms)?;
        // In memory, and cheap for a fresh database (new pages are not journaled): a table
        // that does not fit rolls back cleanly.
        conn.execute_batch("PRAGMA journal_mode = MEMORY")?;
        Ok(Snapshot {
            conn,
            uri,
            now_ms,
            prev_uri: None,
        })
    }

    /// Inserts the tables collectors read into memory, attaches `prev` (the last cycle's
    /// snapshot, or an empty one) and creates there every table it lacks, so queries over
    /// change still prepare. Returns the tables that could not be inserted (the snapshot is
    /// full), with why: each is left out whole, and the rest still load.
    pub fn load(
        &mut self,
        cycle: &Cycle,
        tables: &[Table],
        declared: &BTreeMap<String, Vec<String>>,
        prev: Option<&Snapshot>,
    ) -> rusqlite::Result<Vec<(String, String)>> {
        // A collector the cycle gave up on may still be rolling back its copy.
        let _writer = cycle.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut left_out = Vec::new();
        for t in tables {
            let Rows::Values(rows) = &t.rows else {
                continue;
            };
            match self.insert(&t.name, &t.columns, rows) {
                Ok(()) => {}
                Err(e) if is_full(&e) => {
                    left_out.push((t.name.clone(), explain(&e, cycle.snapshot_max_mb)))
                }
                Err(e) => return Err(e),
            }
        }
        // An empty one is a memdb database too, so readers attach the same one.
        let prev_uri = prev.map_or_else(fresh_uri, |p| p.uri.clone());
        self.conn
            .execute("ATTACH DATABASE ?1 AS prev", [&prev_uri])?;
        self.prev_uri = Some(prev_uri);
        let have = tables_in(&self.conn, "main")?;
        let prev_has = tables_in(&self.conn, "prev")?;
        for name in &have {
            if !prev_has.contains(name) {
                let q = quote(name);
                self.conn.execute_batch(&format!(
                    "CREATE TABLE prev.{q} AS SELECT * FROM main.{q} WHERE 0"
                ))?;
            }
        }
        for (name, cols) in declared {
            if !prev_has.contains(name) && !have.contains(name) {
                create(&self.conn, "prev", name, cols)?;
            }
        }
        Ok(left_out)
    }

    /// One table in one transaction, so a table that does not fit is rolled back whole.
    fn insert(&self, name: &str, columns: &[String], rows: &[Vec<Value>]) -> rusqlite::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        create(&tx, "main", name, columns)?;
        if !columns.is_empty() {
            let marks = vec!["?"; columns.len()].join(", ");
            let mut ins = tx.prepare(&format!(
                "INSERT INTO main.{} VALUES ({marks})",
                quote(name)
            ))?;
            for row in rows {
                ins.execute(rusqlite::params_from_iter(row.iter()))?;
            }
        }
        tx.commit()
    }

    /// Another connection to this snapshot, with `now()` and `prev`, to check invariants in
    /// parallel.
    pub fn reader(&self) -> rusqlite::Result<Connection> {
        let conn = open(&self.uri)?;
        register_now(&conn, self.now_ms)?;
        if let Some(p) = &self.prev_uri {
            conn.execute("ATTACH DATABASE ?1 AS prev", [p])?;
        }
        Ok(conn)
    }

    /// Lets go of `prev`, so only the next cycle keeps this snapshot alive.
    pub fn release_prev(&mut self) -> rusqlite::Result<()> {
        if self.prev_uri.take().is_some() {
            self.conn.execute_batch("DETACH DATABASE prev")?;
        }
        Ok(())
    }

    /// Writes the snapshot (schema `main`) to a SQLite file.
    pub fn write_to(&self, path: &std::path::Path) -> rusqlite::Result<()> {
        let _ = std::fs::remove_file(path);
        // The file, not another memdb database: VACUUM INTO uses the snapshot's VFS unless told.
        let target = file_uri(&path.display().to_string(), "vfs=unix");
        self.conn.execute("VACUUM main INTO ?1", [target])?;
        Ok(())
    }
}

/// A file path as a SQLite URI with `params` (`mode=ro`).
pub fn file_uri(path: &str, params: &str) -> String {
    let mut uri = String::from("file:");
    for c in path.chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push('?');
    uri.push_str(params);
    uri
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
            for d in c.declared(name) {
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
                    return Err(format!("{msg}; the snapshot's tables are: {} (declare it in a [collectors.NAME] collector)", known.join(", ")));
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
