//! Intents as stored: put (with dedup), list, status. Claims and leases are the runs' concern.

use super::StoreError;
use crate::intent::{Intent, IntentStatus, NewIntent};

/// What `put_intent` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Inserted(i64),
    /// An intent of the same type and dedup key exists within the window: this one is it.
    Duplicate(i64),
}

impl Put {
    /// The stored intent's id, new or not.
    pub fn id(self) -> i64 {
        match self {
            Put::Inserted(id) | Put::Duplicate(id) => id,
        }
    }
}

/// Which intents `IntentStore::intents` lists.
#[derive(Debug, Clone, Default)]
pub struct IntentQuery {
    pub status: Option<IntentStatus>,
    pub intent_type: Option<String>,
    /// Newest first, at most this many (all when `None`).
    pub limit: Option<usize>,
}

pub trait IntentStore: Send + Sync {
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
    /// Sets the status (and, when given, the note) of an intent.
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
    /// `put_intent` for an inbox file, at most once per `receipt` (the file's SHA-256), in one
    /// transaction: a file read again after a crash between this commit and the file's removal
    /// finds its receipt and is `Duplicate` of what it was then, however long ago. Receipts are
    /// kept for `RECEIPT_KEEP_MS`.
    fn put_intent_once(
        &self,
        intent: &NewIntent,
        receipt: &str,
        now_ms: i64,
        dedup_window_ms: i64,
    ) -> Result<Put, StoreError>;
}

/// How long a delivered inbox file's receipt is kept (30 days): longer than any daemon stays
/// down with a file it delivered still in its inbox.
pub const RECEIPT_KEEP_MS: i64 = 30 * 24 * 3600 * 1000;
