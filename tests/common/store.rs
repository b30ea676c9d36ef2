//! The store a test runs on: SQLite in its temp dir, or PostgreSQL (the one `scripts/setup`
//! starts, or `VIGIL_TEST_POSTGRES_URL`) in a schema of the test's own, so tests run side by
//! side without meeting. A PostgreSQL that cannot be reached fails the test, saying to run
//! `scripts/setup`: nothing is skipped silently.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use vigil::store::{AnyStore, PgStore, RunRecord, Settled, SqliteStore};

pub const DEFAULT_POSTGRES_URL: &str = "postgres://vigil_test:vigil_test@127.0.0.1:5432/vigil_test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The test database's URL.
pub fn postgres_url() -> String {
    std::env::var("VIGIL_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// A URL of the test database whose `search_path` is a new schema (created by the store when
/// it opens). The first call of a test process drops the schemas of test processes that have
/// ended, so the test database does not grow run after run.
pub fn fresh_postgres_url() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(sweep_schemas);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!(
        "vigil_t{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let base = postgres_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

/// Drops `vigil_tPID_*` schemas whose process is gone.
fn sweep_schemas() {
    // Another test process may sweep at the same time: failures here are not the test's.
    let Ok(names) = try_pg_query(
        &postgres_url(),
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'vigil\\_t%'",
    ) else {
        return;
    };
    for name in names.into_iter().flatten() {
        let pid = name
            .strip_prefix("vigil_t")
            .and_then(|r| r.split('_').next())
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = try_pg_query(
                &postgres_url(),
                &format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"),
            );
        }
    }
}

/// Opens the PostgreSQL store at `url`, or fails the test with what to do.
pub fn open_postgres(url: &str) -> PgStore {
    PgStore::open(url).unwrap_or_else(|e| {
        panic!("cannot open the PostgreSQL store: {e}; run scripts/setup (it starts the packaged cluster with the vigil_test role and database), or set VIGIL_TEST_POSTGRES_URL")
    })
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// A new PostgreSQL schema's URL (checked reachable), `None` on SQLite.
    pub fn fresh_url(self) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let url = fresh_postgres_url();
                drop(open_postgres(&url));
                Some(url)
            }
        }
    }

    /// Where a store of this backend lives for a test: a file in `dir` or a fresh schema.
    pub fn place(self, dir: &Path) -> Place {
        match self.fresh_url() {
            None => Place::Sqlite(dir.join("vigil.db")),
            Some(url) => Place::Postgres(url),
        }
    }

    /// A store of this backend, opened once.
    pub fn open(self, dir: &Path) -> AnyStore {
        self.place(dir).open()
    }
}

/// A store's place, to open it again (another thread, another connection).
#[derive(Debug, Clone)]
pub enum Place {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Place {
    pub fn open(&self) -> AnyStore {
        match self {
            Place::Sqlite(p) => AnyStore::new(SqliteStore::open(p).unwrap()),
            Place::Postgres(url) => AnyStore::new(open_postgres(url)),
        }
    }

    /// The store as host `host` would open it (hosts sharing one store).
    pub fn open_as(&self, host: &str) -> AnyStore {
        match self {
            Place::Sqlite(p) => AnyStore::new(SqliteStore::open(p).unwrap().with_host(host)),
            Place::Postgres(url) => AnyStore::new(open_postgres(url).with_host(host)),
        }
    }

    /// What a child process is told to open (`lock_child` in orchestrator_gates).
    pub fn to_arg(&self) -> String {
        match self {
            Place::Sqlite(p) => p.display().to_string(),
            Place::Postgres(url) => url.clone(),
        }
    }

    pub fn from_arg(arg: &str) -> Place {
        if vigil::store::is_postgres_url(arg) {
            Place::Postgres(arg.into())
        } else {
            Place::Sqlite(arg.into())
        }
    }
}

/// Runs `sql` against the test database on a thread of its own (usable from async tests),
/// returning the first column of every row as text.
pub fn pg_query(url: &str, sql: &str) -> Vec<Option<String>> {
    try_pg_query(url, sql).unwrap_or_else(|e| panic!("{e}; run scripts/setup"))
}

/// `pg_query` that returns what failed instead of failing the test.
pub fn try_pg_query(url: &str, sql: &str) -> Result<Vec<Option<String>>, String> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("cannot reach PostgreSQL at {url}: {e}"))?;
            tokio::spawn(conn);
            let rows = client
                .simple_query(&sql)
                .await
                .map_err(|e| format!("{sql}: {e:?}"))?;
            Ok(rows
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(String::from)),
                    _ => None,
                })
                .collect())
        })
    })
    .join()
    .unwrap()
}

/// Runs `sql` (one number) against the test database on one connection, again and again
/// until `stop`, on a thread of its own; the join gives every answer.
pub fn pg_sample(
    url: &str,
    sql: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<i64>> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}"));
            tokio::spawn(conn);
            let mut out = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let row = client.query_one(&sql, &[]).await.unwrap();
                out.push(row.get::<_, i64>(0));
            }
            out
        })
    })
}

/// How many rows `table` holds in the store at `url`.
pub fn pg_count(url: &str, table: &str) -> i64 {
    pg_query(url, &format!("SELECT count(*) FROM {table}"))[0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

/// Settles `run` as done with `downtime_ms` at `now_ms`, unfenced (a tool's settle), with a
/// `playbook_end` audit entry.
pub fn settle(store: &AnyStore, run: &RunRecord, downtime_ms: i64, now_ms: i64) -> Settled {
    use vigil::store::RunStore;
    let end = vigil::store::RunEnd {
        run_id: run.id,
        downtime_ms,
        intent_id: run.intent_id,
        status: vigil::intent::IntentStatus::Done,
        note: "ran",
        now_ms,
        fence: None,
    };
    let audit = vigil::audit::AuditEntry {
        ts: now_ms,
        event: "playbook_end".into(),
        intent: Some(run.intent_id),
        playbook: Some(run.playbook.clone()),
        details: serde_json::json!({"run": run.id}),
        host: String::new(),
    };
    store.settle_run(&end, &audit).unwrap()
}
