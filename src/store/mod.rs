//! The store: durable state behind one trait. SQLite (embedded, the default) now; a PostgreSQL
//! implementation for fleets joins later behind the same trait. Calls are blocking: async code
//! calls them through `tokio::task::spawn_blocking`.

mod sqlite;

pub use sqlite::SqliteStore;

use crate::intent::{Intent, IntentStatus, NewIntent};
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
}
