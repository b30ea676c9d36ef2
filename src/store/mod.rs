//! The store: durable state behind one trait. SQLite (embedded, the default) now; a PostgreSQL
//! implementation for fleets joins later behind the same trait. Calls are blocking: async code
//! calls them through `tokio::task::spawn_blocking`.

mod sqlite;

pub use sqlite::SqliteStore;

use crate::event::Data;
use crate::intent::{Intent, IntentStatus, NewIntent};
use crate::orchestrator::ledger::{
    AuditEntry, BudgetUsage, Denial, Flag, Lease, LockRecord, RunEnd, RunRecord, RunRequest,
    Symptom, SymptomPolicy, SymptomRecorded,
};
use crate::sources::SourceState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot create the data directory {path}: {source}; pass a writable --data-dir")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Corrupt(String),
}

/// What `put_intent` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Inserted(i64),
    /// An intent of the same type and dedup key exists within the window: this one is it.
    Duplicate(i64),
}

impl Put {
    pub fn id(self) -> i64 {
        match self {
            Put::Inserted(id) | Put::Duplicate(id) => id,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct IntentQuery {
    pub status: Option<IntentStatus>,
    pub intent_type: Option<String>,
    /// Newest first, at most this many (all when `None`).
    pub limit: Option<usize>,
}

pub trait Store: Send + Sync {
    /// Stores an intent unless one of the same type and dedup key was created within
    /// `dedup_window_ms` of `now_ms`.
    fn put_intent(
        &self,
        intent: &NewIntent,
        now_ms: i64,
        dedup_window_ms: i64,
    ) -> Result<Put, StoreError>;
    fn intents(&self, query: &IntentQuery) -> Result<Vec<Intent>, StoreError>;
    fn intent(&self, id: i64) -> Result<Option<Intent>, StoreError>;
    fn set_intent_status(
        &self,
        id: i64,
        status: IntentStatus,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Deletes finished intents last updated before `before_ms`; returns how many.
    fn prune_intents(&self, before_ms: i64) -> Result<usize, StoreError>;
    /// Counts of intents by status.
    fn intent_counts(&self) -> Result<Vec<(IntentStatus, u64)>, StoreError>;
    /// Replaces the recorded state of the daemon's sources.
    fn put_source_states(&self, states: &[SourceState]) -> Result<(), StoreError>;
    fn source_states(&self) -> Result<Vec<SourceState>, StoreError>;

    // The orchestrator's state (SQL in orchestrator/ledger.rs for SQLite).
    /// Records a symptom and arms its flag when the count reaches the threshold.
    fn record_symptom(
        &self,
        kind: &str,
        meta: &Data,
        now_ms: i64,
        policy: SymptomPolicy,
    ) -> Result<SymptomRecorded, StoreError>;
    fn symptoms(
        &self,
        kind: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Symptom>, StoreError>;
    fn symptom_counts(&self, since_ms: i64) -> Result<Vec<(String, u32)>, StoreError>;
    fn flags(&self) -> Result<Vec<Flag>, StoreError>;
    /// Returns the flag when it was armed.
    fn clear_flag(&self, kind: &str, now_ms: i64) -> Result<Option<Flag>, StoreError>;
    /// Checks the store's gates and, with `commit`, reserves and records the run atomically.
    fn begin_run(
        &self,
        req: &RunRequest,
        now_ms: i64,
        commit: bool,
    ) -> Result<Result<RunRecord, Denial>, StoreError>;
    fn run_progress(
        &self,
        run_id: i64,
        step: i64,
        downtime_since: Option<i64>,
    ) -> Result<(), StoreError>;
    /// Ends a run and its intent in one transaction: budget and lock settled, the run's
    /// result, the intent's status and note, and `audit`. A crash leaves all of it or none,
    /// so recovery never sees a finished run under an intent still running. False when the
    /// run had already ended (the intent and audit are written all the same).
    fn settle_run(&self, end: &RunEnd<'_>, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// Settles budget and lock; false when the run had already ended.
    fn finish_run(
        &self,
        run_id: i64,
        result: &str,
        downtime_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    fn runs(
        &self,
        playbook: Option<&str>,
        since_ms: i64,
        open_only: bool,
    ) -> Result<Vec<RunRecord>, StoreError>;
    fn budget_usage(&self, budget: &str, day: &str) -> Result<BudgetUsage, StoreError>;
    fn acquire_lock(
        &self,
        name: &str,
        holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Result<(), LockRecord>, StoreError>;
    fn release_lock(&self, name: &str, holder: &str) -> Result<bool, StoreError>;
    fn renew_leases(&self, holder: &str, lease_ms: i64, now_ms: i64) -> Result<usize, StoreError>;
    fn locks(&self) -> Result<Vec<LockRecord>, StoreError>;
    /// Takes the next pending intent (priority, then age) with a lease.
    fn claim_intent(
        &self,
        holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Intent>, StoreError>;
    /// Running intents and their leases.
    fn running_intents(&self) -> Result<Vec<Lease>, StoreError>;
    fn take_over_intent(
        &self,
        id: i64,
        old_holder: Option<&str>,
        new_holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Deletes symptoms, finished runs, audit rows and budget days older than `before_ms`.
    fn prune_orchestrator(&self, before_ms: i64) -> Result<usize, StoreError>;
    fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError>;
}

/// `execute` and `query_row` through the connection's statement cache. The orchestrator runs
/// the same few statements for every intent, and parsing them again each time cost a quarter
/// of its time; store code runs its statements through these.
pub trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for rusqlite::Connection {
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
