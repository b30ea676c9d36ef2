//! The audit trail's rows; `crate::audit::Audit` writes them together with the JSON-lines file.

use super::StoreError;
use crate::audit::AuditEntry;

pub trait AuditStore: Send + Sync {
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// The last `n` entries, oldest first.
    fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// How many entries of each event the store holds, by event.
    fn audit_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Deletes entries older than `before_ms` (the JSON-lines files stay as the long-term
    /// trail); returns how many.
    fn prune_audit(&self, before_ms: i64) -> Result<usize, StoreError>;
}
