//! SQLite store: WAL mode and a busy timeout so the daemon and the CLI share it without ever
//! seeing "database is locked". The schema is here; each concern's statements are in its file.

mod audit;
mod canaries;
mod escalation;
mod fleet;
mod health;
mod intents;
mod invariants;
mod runs;
mod sources;
mod table;
mod units;

use super::StoreError;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Schema changes append here; `PRAGMA user_version` says how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE intents (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    intent_type TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    data        TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    origin      TEXT NOT NULL,
    status      TEXT NOT NULL,
    note        TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX intents_dedup ON intents (intent_type, dedup_key, created_at);
CREATE INDEX intents_status ON intents (status, priority DESC, created_at);
CREATE TABLE source_states (
    source   TEXT PRIMARY KEY,
    kind     TEXT NOT NULL,
    up       INTEGER NOT NULL,
    reason   TEXT,
    since_ms INTEGER NOT NULL
);
"#,
    // Symptoms, flags, runs, budgets, locks, audit; leases on intents.
    r#"
CREATE TABLE symptoms (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    ts   INTEGER NOT NULL,
    meta TEXT NOT NULL
);
CREATE INDEX symptoms_kind_ts ON symptoms (kind, ts);
CREATE TABLE escalation_flags (
    kind          TEXT PRIMARY KEY,
    reason        TEXT NOT NULL,
    symptom_count INTEGER NOT NULL,
    armed_at      INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    cleared_at    INTEGER
);
CREATE TABLE runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    intent_id      INTEGER NOT NULL,
    playbook       TEXT NOT NULL,
    mode           TEXT NOT NULL,
    holder         TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    ended_at       INTEGER,
    result         TEXT,
    budget         TEXT,
    budget_day     TEXT,
    reserved_ms    INTEGER NOT NULL DEFAULT 0,
    downtime_ms    INTEGER NOT NULL DEFAULT 0,
    lock_name      TEXT,
    step           INTEGER NOT NULL DEFAULT 0,
    downtime_since INTEGER
);
CREATE INDEX runs_playbook ON runs (playbook, started_at);
CREATE INDEX runs_open ON runs (ended_at);
CREATE TABLE budget_ledger (
    budget      TEXT NOT NULL,
    day         TEXT NOT NULL,
    used_ms     INTEGER NOT NULL DEFAULT 0,
    reserved_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, day)
);
CREATE TABLE locks (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    ts       INTEGER NOT NULL,
    event    TEXT NOT NULL,
    intent   INTEGER,
    playbook TEXT,
    details  TEXT NOT NULL
);
CREATE INDEX audit_ts ON audit (ts);
ALTER TABLE intents ADD COLUMN lease_holder TEXT;
ALTER TABLE intents ADD COLUMN lease_expires INTEGER;
"#,
    // Invariant state and `for` first sightings.
    r#"
CREATE TABLE invariant_state (
    id         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    since_ms   INTEGER NOT NULL,
    violations TEXT NOT NULL DEFAULT '[]',
    updated_ms INTEGER NOT NULL
);
CREATE TABLE invariant_pending (
    id            TEXT NOT NULL,
    key           TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (id, key)
);
"#,
    // Alert messages not yet delivered: one per invariant, retried until delivered.
    r#"
CREATE TABLE alert_outbox (
    invariant       TEXT PRIMARY KEY,
    resolved        INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL
);
"#,
    // Fencing: epochs of intent leases and locks (only grow), the lock a deferred intent
    // waits for. Defaults keep rows of older stores valid: epoch 0 is a claim made before.
    r#"
ALTER TABLE intents ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE intents ADD COLUMN wait_lock TEXT;
ALTER TABLE locks ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lock_epoch INTEGER NOT NULL DEFAULT 0;
CREATE TABLE sequences (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"#,
    // Supervised units: state, leader pid and start time, restart history, quarantine.
    r#"
CREATE TABLE units (
    name           TEXT PRIMARY KEY,
    state          TEXT NOT NULL,
    tier           INTEGER NOT NULL,
    pid            INTEGER,
    start_ticks    INTEGER,
    restarts       TEXT NOT NULL,
    total_restarts INTEGER NOT NULL,
    last_exit      TEXT,
    last_error     TEXT,
    bundle         TEXT,
    since_ms       INTEGER NOT NULL,
    marker         TEXT
);
"#,
    // An alert a delivery round has taken: a "resolved" one no longer cancels it.
    r#"
ALTER TABLE alert_outbox ADD COLUMN sending INTEGER NOT NULL DEFAULT 0;
"#,
    // Canary runs: results, downtime, judgements, and restores a dead daemon left pending.
    r#"
CREATE TABLE canary_runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    canary          TEXT NOT NULL,
    mode            TEXT NOT NULL,
    path            TEXT,
    port            INTEGER,
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    result          TEXT,
    reason          TEXT,
    duration_ms     INTEGER NOT NULL DEFAULT 0,
    downtime_ms     INTEGER NOT NULL DEFAULT 0,
    budget          TEXT,
    budget_day      TEXT,
    reserved_ms     INTEGER NOT NULL DEFAULT 0,
    restore_pending INTEGER NOT NULL DEFAULT 0,
    down_since      INTEGER,
    report          TEXT
);
CREATE INDEX canary_runs_canary ON canary_runs (canary, started_at);
"#,
    // File source checkpoints: where each source is in the file at its path (and in the one
    // rotated away from it while that is still read), so a restart loses no line.
    r#"
CREATE TABLE source_checkpoints (
    source              TEXT NOT NULL,
    path                TEXT NOT NULL,
    dev                 INTEGER NOT NULL,
    ino                 INTEGER NOT NULL,
    head_sha256         BLOB NOT NULL,
    head_len            INTEGER NOT NULL,
    offset              INTEGER NOT NULL,
    rotated_dev         INTEGER,
    rotated_ino         INTEGER,
    rotated_head_sha256 BLOB,
    rotated_head_len    INTEGER,
    rotated_offset      INTEGER,
    saved_ms            INTEGER NOT NULL,
    PRIMARY KEY (source, path)
);
"#,
    // Fleet: the host each intent belongs to ('' before hosts: any), the host of each run,
    // audit entry and source state, and when each host was last seen.
    r#"
ALTER TABLE intents ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN host TEXT NOT NULL DEFAULT '';
CREATE TABLE source_states_by_host (
    host     TEXT NOT NULL,
    source   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    up       INTEGER NOT NULL,
    reason   TEXT,
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (host, source)
);
INSERT INTO source_states_by_host SELECT '', source, kind, up, reason, since_ms FROM source_states;
DROP TABLE source_states;
ALTER TABLE source_states_by_host RENAME TO source_states;
CREATE TABLE hosts (
    host         TEXT PRIMARY KEY,
    last_seen_ms INTEGER NOT NULL
);
"#,
    // Fleet: a unit is one host's (hosts may supervise units of the same name).
    r#"
CREATE TABLE units_by_host (
    host           TEXT NOT NULL,
    name           TEXT NOT NULL,
    state          TEXT NOT NULL,
    tier           INTEGER NOT NULL,
    pid            INTEGER,
    start_ticks    INTEGER,
    restarts       TEXT NOT NULL,
    total_restarts INTEGER NOT NULL,
    last_exit      TEXT,
    last_error     TEXT,
    bundle         TEXT,
    since_ms       INTEGER NOT NULL,
    marker         TEXT,
    PRIMARY KEY (host, name)
);
INSERT INTO units_by_host SELECT '', name, state, tier, pid, start_ticks, restarts, total_restarts,
    last_exit, last_error, bundle, since_ms, marker FROM units;
DROP TABLE units;
ALTER TABLE units_by_host RENAME TO units;
"#,
    // Scopes: a budget's day, a lock and an escalation flag belong to one host (`scope` is its
    // name) or to the fleet (`*`); rows from before scopes carry '' and count for every host.
    // Symptoms carry the host that saw them.
    r#"
CREATE TABLE budget_ledger_scoped (
    budget      TEXT NOT NULL,
    day         TEXT NOT NULL,
    scope       TEXT NOT NULL,
    used_ms     INTEGER NOT NULL DEFAULT 0,
    reserved_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, day, scope)
);
INSERT INTO budget_ledger_scoped SELECT budget, day, '', used_ms, reserved_ms FROM budget_ledger;
DROP TABLE budget_ledger;
ALTER TABLE budget_ledger_scoped RENAME TO budget_ledger;
CREATE TABLE locks_scoped (
    name        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    holder      TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    epoch       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, scope)
);
INSERT INTO locks_scoped SELECT name, '', holder, acquired_at, expires_at, epoch FROM locks;
DROP TABLE locks;
ALTER TABLE locks_scoped RENAME TO locks;
CREATE TABLE escalation_flags_scoped (
    kind          TEXT NOT NULL,
    scope         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    symptom_count INTEGER NOT NULL,
    armed_at      INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    cleared_at    INTEGER,
    PRIMARY KEY (kind, scope)
);
INSERT INTO escalation_flags_scoped SELECT kind, '', reason, symptom_count, armed_at, expires_at, cleared_at
    FROM escalation_flags;
DROP TABLE escalation_flags;
ALTER TABLE escalation_flags_scoped RENAME TO escalation_flags;
ALTER TABLE runs ADD COLUMN budget_scope TEXT NOT NULL DEFAULT '';
ALTER TABLE canary_runs ADD COLUMN budget_scope TEXT NOT NULL DEFAULT '';
ALTER TABLE symptoms ADD COLUMN host TEXT NOT NULL DEFAULT '';
"#,
    // Inbox files delivered, by their SHA-256: a file read again after a crash between the
    // store's commit and the file's removal is not stored twice (`put_intent_once`).
    r#"
CREATE TABLE inbox_receipts (
    sha256       TEXT PRIMARY KEY,
    intent       INTEGER NOT NULL,
    delivered_ms INTEGER NOT NULL
);
CREATE INDEX inbox_receipts_delivered ON inbox_receipts (delivered_ms);
"#,
];

pub struct SqliteStore {
    path: PathBuf,
    /// This daemon's host (`Config::host`): stamped on what it stores, and whose intents it
    /// claims.
    host: String,
    conn: Mutex<Connection>,
    /// The last health problem seen (`health.rs`), so each change is logged once.
    last_health: Mutex<Option<String>>,
}

impl SqliteStore {
    /// Opens (creating if needed) `DATA_DIR/vigil.db`.
    pub fn open_dir(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        Self::open(&data_dir.join("vigil.db"))
    }

    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        // Room for every statement the store runs (`Cached`), so none is parsed twice.
        conn.set_prepared_statement_cache_capacity(128);
        // Switching a fresh file to WAL takes an exclusive lock, and SQLite answers a process
        // that races another for it with SQLITE_BUSY at once, without the busy handler: two
        // processes opening a new store together (a daemon and a CLI call) must both get it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match conn.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
            ) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                r => break r.map_err(err)?,
            }
        }
        let store = Self {
            path: path.to_path_buf(),
            host: super::hostname(),
            conn: Mutex::new(conn),
            last_health: Mutex::new(None),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The same store, acting as `host` (default: the machine's hostname).
    pub fn with_host(mut self, host: &str) -> Self {
        self.host = host.to_string();
        self
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().unwrap();
        // IMMEDIATE: two processes opening a fresh store at once must not both migrate.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let version: usize = tx
            .row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "store {} has schema version {version}, newer than this vigil knows ({}); upgrade vigil",
                self.path.display(),
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql).map_err(|e| self.err(e))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Runs `f` with the connection: for the store's own statements only.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap();
        f(&mut conn).map_err(|e| self.err(e))
    }
}

/// `execute` and `query_row` through the connection's statement cache. The orchestrator runs
/// the same few statements for every intent, and parsing them again each time cost a quarter
/// of its time; store code runs its statements through these.
trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::{IntentStatus, NewIntent};
    use crate::store::{IntentQuery, IntentStore, Put};
    use serde_json::json;

    fn intent(kind: &str, data: serde_json::Value) -> NewIntent {
        NewIntent {
            intent_type: kind.into(),
            priority: 5,
            reason: "r".into(),
            data: data.as_object().unwrap().clone(),
            dedup_key: None,
            origin: "test".into(),
        }
    }

    #[test]
    fn same_type_and_key_within_the_window_is_one_intent() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open_dir(dir.path()).unwrap();
        let hour = 3_600_000;
        let a = s
            .put_intent(&intent("alert_x", json!({"a": 1})), 0, hour)
            .unwrap();
        let b = s
            .put_intent(&intent("alert_x", json!({"a": 1})), hour - 1, hour)
            .unwrap();
        let c = s
            .put_intent(&intent("alert_x", json!({"a": 2})), 10, hour)
            .unwrap();
        let d = s
            .put_intent(&intent("alert_x", json!({"a": 1})), hour + 1, hour)
            .unwrap();
        assert!(matches!(a, Put::Inserted(_)));
        assert_eq!(b, Put::Duplicate(a.id()));
        assert!(matches!(c, Put::Inserted(_)));
        assert!(
            matches!(d, Put::Inserted(_)),
            "outside the window it is new"
        );
        assert_eq!(s.intents(&IntentQuery::default()).unwrap().len(), 3);
    }

    #[test]
    fn prunes_only_finished_intents_past_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open_dir(dir.path()).unwrap();
        let old_done = s.put_intent(&intent("a", json!({})), 0, 1).unwrap().id();
        let old_pending = s.put_intent(&intent("b", json!({})), 0, 1).unwrap().id();
        s.set_intent_status(old_done, IntentStatus::Done, Some("ok"), 5)
            .unwrap();
        assert_eq!(s.prune_intents(100).unwrap(), 1);
        assert!(s.intent(old_done).unwrap().is_none());
        assert_eq!(
            s.intent(old_pending).unwrap().unwrap().status,
            IntentStatus::Pending
        );
    }

    #[test]
    fn a_store_from_before_fencing_opens_and_its_claims_and_locks_still_work() {
        use crate::store::{Fence, LeaseFence, LockFence, RunStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.db");
        {
            // A store as the schema before fencing left it, with a claimed intent and a lock.
            let before = MIGRATIONS
                .iter()
                .position(|m| m.contains("lease_epoch"))
                .unwrap();
            let c = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..before] {
                c.execute_batch(sql).unwrap();
            }
            c.execute_batch(&format!("PRAGMA user_version = {before};"))
                .unwrap();
            c.execute_batch(
                "
                 INSERT INTO intents (intent_type, priority, reason, data, dedup_key, origin, status, created_at, updated_at, lease_holder, lease_expires)
                 VALUES ('trigger_x', 5, 'r', '{}', 'k', 'test', 'running', 0, 0, 'old:1:0', 30000);
                 INSERT INTO intents (intent_type, priority, reason, data, dedup_key, origin, status, created_at, updated_at)
                 VALUES ('trigger_y', 5, 'r', '{}', 'k2', 'test', 'pending', 0, 0);
                 INSERT INTO locks (name, holder, acquired_at, expires_at) VALUES ('gpu0', 'old:1:0/1', 0, 30000);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let leases = s.running_intents().unwrap();
        assert_eq!((leases[0].intent, leases[0].epoch), (1, 0));
        let old = Fence {
            lease: LeaseFence {
                intent: 1,
                holder: "old:1:0".into(),
                epoch: 0,
            },
            lock: Some(LockFence {
                name: "gpu0".into(),
                holder: "old:1:0/1".into(),
                epoch: 0,
            }),
        };
        assert!(
            s.check_fence(&old, 1_000).unwrap(),
            "the old claim still holds"
        );
        // A take-over moves the epoch on: the old holder's fence no longer holds.
        let epoch = s
            .take_over_intent(1, Some("old:1:0"), "new:2:0", 30_000, 40_000)
            .unwrap();
        assert_eq!(epoch, Some(1));
        assert!(!s.check_fence(&old, 1_000).unwrap());
        let claim = s
            .claim_intent("new:2:0", 30_000, 3_600_000, 40_000)
            .unwrap();
        assert_eq!(claim.map(|c| (c.intent.id, c.epoch)), Some((2, 1)));
        assert!(s
            .acquire_lock(
                "gpu0",
                crate::store::Scope::Host,
                "new:2:0/2",
                30_000,
                40_000
            )
            .unwrap()
            .is_ok());
        assert_eq!(s.locks().unwrap()[0].epoch, 1);
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let id = SqliteStore::open_dir(dir.path())
            .unwrap()
            .put_intent(&intent("a", json!({"k": "v"})), 0, 1)
            .unwrap()
            .id();
        let s = SqliteStore::open_dir(dir.path()).unwrap();
        assert_eq!(s.intent(id).unwrap().unwrap().data["k"], "v");
    }
}
