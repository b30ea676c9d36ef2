//! SQLite store: WAL mode and a busy timeout so the daemon and the CLI share it without ever
//! seeing "database is locked".

use super::{Cached, IntentQuery, Put, Store, StoreError};
use crate::event::Data;
use crate::intent::{Intent, IntentStatus, NewIntent};
use crate::orchestrator::ledger::{
    self, AuditEntry, BudgetUsage, Denial, Flag, Lease, LockRecord, RunEnd, RunRecord, RunRequest,
    Symptom, SymptomPolicy, SymptomRecorded,
};
use crate::sources::SourceState;
use rusqlite::{params, Connection, OptionalExtension};
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
    crate::orchestrator::ledger::MIGRATION,
    crate::invariants::state::MIGRATION,
];

pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
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
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(err)?;
        let store = Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
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

    /// Runs `f` with the connection; for modules that keep their own tables here.
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap();
        f(&mut conn).map_err(|e| self.err(e))
    }
}

fn set_status(
    conn: &Connection,
    id: i64,
    status: IntentStatus,
    note: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.exec(
        "UPDATE intents SET status = ?2, note = COALESCE(?3, note), updated_at = ?4 WHERE id = ?1",
        params![id, status.as_str(), note, now_ms],
    )
    .map(drop)
}

const INTENT_COLUMNS: &str =
    "id, intent_type, priority, reason, data, dedup_key, origin, status, note, created_at, updated_at";

fn row_to_intent(r: &rusqlite::Row) -> rusqlite::Result<Intent> {
    let data: String = r.get(4)?;
    let status: String = r.get(7)?;
    let bad = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    Ok(Intent {
        id: r.get(0)?,
        intent_type: r.get(1)?,
        priority: r.get(2)?,
        reason: r.get(3)?,
        data: serde_json::from_str(&data).map_err(|e| bad(4, e.to_string()))?,
        dedup_key: r.get(5)?,
        origin: r.get(6)?,
        status: status.parse().map_err(|e: String| bad(7, e))?,
        note: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

impl Store for SqliteStore {
    fn put_intent(
        &self,
        intent: &NewIntent,
        now_ms: i64,
        dedup_window_ms: i64,
    ) -> Result<Put, StoreError> {
        let key = intent.dedup_key();
        let data = serde_json::to_string(&intent.data).expect("JSON");
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let existing: Option<i64> = tx
                .row(
                    "SELECT id FROM intents WHERE intent_type = ?1 AND dedup_key = ?2 AND created_at > ?3
                     ORDER BY created_at DESC LIMIT 1",
                    params![intent.intent_type, key, now_ms - dedup_window_ms],
                    |r| r.get(0),
                )
                .optional()?;
            let put = match existing {
                Some(id) => Put::Duplicate(id),
                None => {
                    tx.exec(
                        "INSERT INTO intents (intent_type, priority, reason, data, dedup_key, origin, status, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7)",
                        params![intent.intent_type, intent.priority, intent.reason, data, key, intent.origin, now_ms],
                    )?;
                    Put::Inserted(tx.last_insert_rowid())
                }
            };
            tx.commit()?;
            Ok(put)
        })
    }

    fn intents(&self, q: &IntentQuery) -> Result<Vec<Intent>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {INTENT_COLUMNS} FROM intents
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR intent_type = ?2)
                 ORDER BY created_at DESC, id DESC LIMIT ?3"
            ))?;
            let limit = q.limit.map_or(-1, |l| l as i64);
            let rows = stmt.query_map(
                params![q.status.map(|s| s.as_str()), q.intent_type, limit],
                row_to_intent,
            )?;
            rows.collect()
        })
    }

    fn intent(&self, id: i64) -> Result<Option<Intent>, StoreError> {
        self.with_conn(|conn| {
            conn.row(
                &format!("SELECT {INTENT_COLUMNS} FROM intents WHERE id = ?1"),
                [id],
                row_to_intent,
            )
            .optional()
        })
    }

    fn set_intent_status(
        &self,
        id: i64,
        status: IntentStatus,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(|conn| set_status(conn, id, status, note, now_ms))
    }

    fn prune_intents(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|conn| {
            conn.exec(
                "DELETE FROM intents WHERE status NOT IN ('pending', 'running') AND updated_at < ?1",
                [before_ms],
            )
        })
    }

    fn intent_counts(&self) -> Result<Vec<(IntentStatus, u64)>, StoreError> {
        let rows: Vec<(String, u64)> = self.with_conn(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT status, count(*) FROM intents GROUP BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        rows.into_iter()
            .map(|(s, n)| s.parse().map(|s| (s, n)).map_err(StoreError::Corrupt))
            .collect()
    }

    fn put_source_states(&self, states: &[SourceState]) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            tx.exec("DELETE FROM source_states", [])?;
            for s in states {
                tx.exec(
                    "INSERT INTO source_states (source, kind, up, reason, since_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![s.source, s.kind, s.up, s.reason, s.since_ms],
                )?;
            }
            tx.commit()
        })
    }

    fn source_states(&self) -> Result<Vec<SourceState>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT source, kind, up, reason, since_ms FROM source_states ORDER BY source",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(SourceState {
                    source: r.get(0)?,
                    kind: r.get(1)?,
                    up: r.get(2)?,
                    reason: r.get(3)?,
                    since_ms: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    fn record_symptom(
        &self,
        kind: &str,
        meta: &Data,
        now_ms: i64,
        policy: SymptomPolicy,
    ) -> Result<SymptomRecorded, StoreError> {
        self.with_conn(|c| ledger::record_symptom(c, kind, meta, now_ms, policy))
    }

    fn symptoms(
        &self,
        kind: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Symptom>, StoreError> {
        self.with_conn(|c| ledger::symptoms(c, kind, since_ms, limit))
    }

    fn symptom_counts(&self, since_ms: i64) -> Result<Vec<(String, u32)>, StoreError> {
        self.with_conn(|c| ledger::symptom_counts(c, since_ms))
    }

    fn flags(&self) -> Result<Vec<Flag>, StoreError> {
        self.with_conn(|c| ledger::flags(c))
    }

    fn clear_flag(&self, kind: &str, now_ms: i64) -> Result<Option<Flag>, StoreError> {
        self.with_conn(|c| ledger::clear_flag(c, kind, now_ms))
    }

    fn begin_run(
        &self,
        req: &RunRequest,
        now_ms: i64,
        commit: bool,
    ) -> Result<Result<RunRecord, Denial>, StoreError> {
        self.with_conn(|c| ledger::begin_run(c, req, now_ms, commit))
    }

    fn run_progress(
        &self,
        run_id: i64,
        step: i64,
        downtime_since: Option<i64>,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| ledger::run_progress(c, run_id, step, downtime_since))
    }

    fn settle_run(&self, end: &RunEnd<'_>, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let ended = ledger::end_run(
                &tx,
                end.run_id,
                end.status.as_str(),
                end.downtime_ms,
                end.now_ms,
            )?;
            set_status(&tx, end.intent_id, end.status, Some(end.note), end.now_ms)?;
            ledger::append_audit(&tx, audit)?;
            tx.commit()?;
            Ok(ended)
        })
    }

    fn finish_run(
        &self,
        run_id: i64,
        result: &str,
        downtime_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.with_conn(|c| ledger::finish_run(c, run_id, result, downtime_ms, now_ms))
    }

    fn runs(
        &self,
        playbook: Option<&str>,
        since_ms: i64,
        open_only: bool,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.with_conn(|c| ledger::runs(c, playbook, since_ms, open_only))
    }

    fn budget_usage(&self, budget: &str, day: &str) -> Result<BudgetUsage, StoreError> {
        self.with_conn(|c| ledger::budget_usage(c, budget, day))
    }

    fn acquire_lock(
        &self,
        name: &str,
        holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Result<(), LockRecord>, StoreError> {
        self.with_conn(|c| ledger::acquire_lock(c, name, holder, lease_ms, now_ms))
    }

    fn release_lock(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        self.with_conn(|c| ledger::release_lock(c, name, holder))
    }

    fn renew_leases(&self, holder: &str, lease_ms: i64, now_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| ledger::renew_leases(c, holder, lease_ms, now_ms))
    }

    fn locks(&self) -> Result<Vec<LockRecord>, StoreError> {
        self.with_conn(|c| ledger::locks(c))
    }

    fn claim_intent(
        &self,
        holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Intent>, StoreError> {
        self.with_conn(|c| {
            ledger::claim_intent(c, holder, lease_ms, now_ms, row_to_intent, INTENT_COLUMNS)
        })
    }

    fn running_intents(&self) -> Result<Vec<Lease>, StoreError> {
        self.with_conn(|c| ledger::running_intents(c))
    }

    fn take_over_intent(
        &self,
        id: i64,
        old_holder: Option<&str>,
        new_holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            ledger::take_over_intent(c, id, old_holder, new_holder, lease_ms, now_ms)
        })
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.with_conn(|c| ledger::append_audit(c, entry))
    }

    fn prune_orchestrator(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| ledger::prune(c, before_ms))
    }

    fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.with_conn(|c| ledger::audit_tail(c, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
